"""Device handlers: one module per device kind, each placing its netdev into a pod netns and back."""
