"""Images: the image sandwich on a GAN source and natural images (Kodak)."""

EXPERIMENTS = []
