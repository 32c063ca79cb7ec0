"""Channel plugins the tests load the way an operator's plugin is loaded: by entry point."""
