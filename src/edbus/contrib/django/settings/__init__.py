"""Plugin settings (Open edX plugin convention: ``plugin_settings(settings)`` per environment)."""
