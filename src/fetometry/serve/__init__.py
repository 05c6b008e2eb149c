"""The web app and REST API (`fetometry serve`): FastAPI over fetometry.exam.

``fetometry.serve.app.create_app(ServeSettings(...))`` builds the app;
``fetometry.serve.command`` runs it with uvicorn on 127.0.0.1 by default. The page
(``static/``) is plain HTML and JavaScript served by the app itself: no build step, no
CDN. Nothing is imported here so that registering the CLI verb stays cheap.
"""
