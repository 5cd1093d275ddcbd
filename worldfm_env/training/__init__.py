"""Training the frame model: multi-view clips (data), stages I and II (stages), stage III (distill)."""
