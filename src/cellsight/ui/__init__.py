"""The quality engineers' dashboard: server-rendered pages with a little vanilla JS, served by the service."""
