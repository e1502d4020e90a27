"""MS-COCO train2014: StyA2K's content images (official code: all 82,783, resized to 512x512)."""

from __future__ import annotations

from sparsegen.data.archives import ArchiveSource

# No checksum is published; the size is verified and the sha256 recorded at fetch.
SOURCE = ArchiveSource(
    name="coco2014_train",
    title="MS-COCO train2014 (StyA2K content images)",
    filename="train2014.zip",
    folder="train2014",
    depth=1,
    url="http://images.cocodataset.org/zips/train2014.zip",
    size=13_510_573_713,
    n_images=82_783,
    contents="82,783 JPEGs under train2014/",
    licence="COCO terms of use: images under their Flickr licences (cocodataset.org/#termsofuse)",
)
