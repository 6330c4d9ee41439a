"""The Flask admin console for agents and managers."""
