"""resweep's Streamlit dashboard."""
