"""The operator console: the page at ``/ui`` (static HTML, CSS and JavaScript modules, no build step), its
live feed (``GET /feed``, server-sent events) and the dry run (``POST /pipeline/test``) on the admin API."""
