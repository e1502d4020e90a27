"""One package per paper: networks, losses, training task, sampling."""
