"""Dispatcher: picks a substation for every charge request."""
