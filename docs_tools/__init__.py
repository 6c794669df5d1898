"""Tools that write the project's generated documentation pages."""
