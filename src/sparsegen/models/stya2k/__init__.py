"""StyA2K, "All-to-key Attention for Arbitrary Style Transfer" (ICCV 2023).

network: encoder, transforms, decoder (`StyA2KNet`, `build_network`); transforms: A2K and the
Table 1 peers; losses: Eq. 14-19; task: the `TrainTask` and `load_model`; sampling: evaluation
samples and timing.
"""
