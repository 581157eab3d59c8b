"""The run page's parts: what the record says (``facts``), its live logs (``logs``), its
metrics (``metrics``), its files (``files``: artifacts and the snapshot) and its actions
(``actions``). ``views/run.py`` puts their routes together."""
