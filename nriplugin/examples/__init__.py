"""Runnable example plugins built on nriplugin."""
