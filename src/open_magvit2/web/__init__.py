"""A local web app over the tokenizers and the generator (``open-magvit2 serve``, the ``web`` extra).

``models.py`` loads what is served, ``tasks.py`` computes (no web code, tested directly), ``app.py`` is the Gradio
page. Nothing here is imported by the library.
"""
