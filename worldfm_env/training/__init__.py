"""Training the frame model: multi-view clip data (more stages to come)."""
