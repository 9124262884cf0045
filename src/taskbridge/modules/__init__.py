"""Layers and parameter constraints shared by several networks (not a registry family).

`layers`: anti-aliased resampling, normalisation and initialisation of the GAN networks;
`stiefel`: keeping projection matrices orthonormal under any optimizer (ODCR).
"""
