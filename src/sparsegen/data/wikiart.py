"""WikiArt, the ArtGAN refined release (ICIP 2017) that StyA2K trains its style branch on.

Layout `wikiart/<Style>/<artist_title>.jpg`; the style folder becomes the manifest's `style`
column. Size and checksum are unpublished: fetch checks that the zip opens and counts its images,
and records the sha256 it computed."""

from __future__ import annotations

from sparsegen.data.archives import ArchiveSource


def style_column(relative: str) -> dict[str, str]:
    """'Impressionism/claude-monet_x.jpg' -> {'style': 'Impressionism'}."""
    return {"style": relative.split("/", 1)[0]}


SOURCE = ArchiveSource(
    name="wikiart",
    title="WikiArt, ArtGAN refined release (StyA2K style images)",
    filename="wikiart.zip",
    folder="wikiart",
    depth=2,
    url="http://web.fsktm.um.edu.my/~cschan/source/ICIP2017/wikiart.zip",
    mirrors=("https://drive.google.com/file/d/182-pFiKvXPB25DbTfAYjJ6gDE-ZCRXz0",),
    contents="about 25.4 GB; images under wikiart/<Style>/<artist_title>.jpg",
    licence="non-commercial research use only; WikiArt.org terms apply",
    columns=style_column,
)
