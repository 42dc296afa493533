"""The review dashboard: navigation and login. Run `auditor dashboard`, or from the repository
root `streamlit run dashboards/app.py` (`.streamlit/config.toml` binds it to 127.0.0.1).

The database is the auditor's: `AUDITOR_DB_URL`, else `.auditor/auditor.db`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:  # `streamlit run` puts only this folder on the path
    sys.path.insert(0, ROOT)

from dashboards import auth

PAGES = [
    st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("views/audit.py", title="Audit", icon=":material/fact_check:"),
    st.Page("views/samples.py", title="Sample explorer", icon=":material/image_search:"),
    st.Page("views/embeddings.py", title="Embeddings", icon=":material/scatter_plot:"),
    st.Page("views/drift.py", title="Drift", icon=":material/timeline:"),
    st.Page("views/review.py", title="Review", icon=":material/rate_review:"),
]

st.set_page_config(page_title="Relevance auditor", page_icon=":material/policy:", layout="wide")
page = st.navigation(PAGES)
auth.gate()
page.run()
