"""Entry script: `streamlit run dashboard/Home.py`.

Runs on every page: puts the repository root on sys.path (Streamlit only adds
dashboard/), draws the model pickers in the sidebar, loads both models (cached)
and then runs the chosen page.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

import ui  # noqa: E402

st.set_page_config(page_title="Two language models, side by side", page_icon=":material/compare:", layout="wide")

PAGES = {  # section -> (file, title, icon)
    "Overview": [("pages/home.py", "Home", ":material/home:")],
    "Weights": [
        ("pages/architecture.py", "Architecture", ":material/account_tree:"),
        ("pages/vocabulary.py", "Vocabulary", ":material/abc:"),
        ("pages/embeddings.py", "Embeddings", ":material/scatter_plot:"),
    ],
    "Running text": [
        ("pages/hidden_states.py", "Hidden states", ":material/layers:"),
        ("pages/similarity.py", "Contextual similarity", ":material/show_chart:"),
        ("pages/logit_lens.py", "Logit lens", ":material/visibility:"),
        ("pages/attention.py", "Attention", ":material/grid_on:"),
    ],
}
HERE = Path(__file__).parent
navigation = {
    section: [st.Page(file, title=title, icon=icon, default=file == "pages/home.py")
              for file, title, icon in pages if (HERE / file).exists()]
    for section, pages in PAGES.items()
}

page = st.navigation(navigation)
keys = ui.model_pickers()
st.session_state["_slots"] = ui.load_slots(keys)
page.run()
