"""Retrieval-augmented, cited Q&A over policy documents."""
