"""The dashboard pages, one module each, run by Streamlit as scripts (see dashboards/app.py)."""
