"""Browser-side widgets shared by JupyterLab and Panel."""
