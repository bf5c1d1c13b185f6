"""Flask page: upload a photo, see the reconstructed mesh (not built yet)."""
