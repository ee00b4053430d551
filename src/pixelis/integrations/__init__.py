"""Bridges from Pixelis's tools and rewards to other training libraries."""
