"""idhhpc.explain: Grad-CAM heatmaps, overlays, CAM-in-tumor statistics and a case gallery.

Modules: ``gradcam`` (CAMs), ``overlay`` (PNGs), ``stats`` (the only user of tumor masks),
``native`` (NIfTI output), ``gallery`` (Markdown/HTML page) and ``cases`` (the explain stage).
Import from the modules; this package stays light so importing it does not load matplotlib.
"""
