"""The review dashboard for domain experts: a Streamlit multipage app over the findings store.

Start it with `auditor dashboard` or `streamlit run dashboards/app.py` (README, "Dashboard").
`queries` and `review_queries` hold the SQL (plain functions, bounded by limits; their records
in `query_results`), `data` caches it per database
URL, `files` finds an audit's artefacts on disk, `inference` reruns the audited model for the
sample explorer, `charts` builds the plots and `widgets` the repeated page elements.
"""
