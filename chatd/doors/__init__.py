"""Doors: protocol adapters that turn bytes into Room calls and events back into bytes."""
