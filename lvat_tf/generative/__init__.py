"""Generative models whose latent space LVAT perturbs: the VAE (and, later, Glow)."""
