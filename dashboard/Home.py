"""Entry script: `streamlit run dashboard/Home.py`.

Runs on every page: puts the repository root on sys.path (Streamlit only adds
dashboard/), draws the model pickers in the sidebar, loads both models (cached)
and then runs the chosen page.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402

import export  # noqa: E402
import remote_ui  # noqa: E402
import report  # noqa: E402
import theme  # noqa: E402
import ui  # noqa: E402
from core.remote.jobs import stop_when  # noqa: E402

st.set_page_config(page_title="Two language models, side by side", page_icon=":material/compare:", layout="wide")

PAGES = {  # section -> (file, title, icon)
    "Overview": [("views/home.py", "Home", ":material/home:")],
    "Weights": [
        ("views/weights/architecture.py", "Architecture", ":material/account_tree:"),
        ("views/weights/vocabulary.py", "Vocabulary", ":material/abc:"),
        ("views/weights/embeddings.py", "Embeddings", ":material/scatter_plot:"),
    ],
    "Running text": [
        ("views/running/hidden_states.py", "Hidden states", ":material/layers:"),
        ("views/running/similarity.py", "Contextual similarity", ":material/show_chart:"),
        ("views/running/hidden_state_maps.py", "Hidden-state maps", ":material/bubble_chart:"),
        ("views/running/logit_lens.py", "Logit lens", ":material/visibility:"),
        ("views/running/attention.py", "Attention", ":material/grid_on:"),
    ],
    "Intervene": [
        ("views/intervene/next_token.py", "Next token and generation", ":material/keyboard_double_arrow_right:"),
        ("views/intervene/patchscopes.py", "Patchscopes", ":material/troubleshoot:"),
        ("views/intervene/steering.py", "Steering", ":material/alt_route:"),
    ],
    "Cause": [
        ("views/cause/activation_patching.py", "Activation patching", ":material/healing:"),
        ("views/cause/input_tokens.py", "Which input tokens mattered", ":material/highlight:"),
        ("views/cause/block_writes.py", "What each block writes", ":material/stacked_bar_chart:"),
    ],
}
RUNS_REMOTE = {  # pages that work with a model on NDIF (one line each)
    "views/home.py",
    "views/weights/architecture.py",
    "views/weights/vocabulary.py",
    "views/weights/embeddings.py",
    "views/running/hidden_states.py",
    "views/running/similarity.py",
    "views/running/hidden_state_maps.py",
    "views/running/logit_lens.py",
    "views/running/attention.py",
    "views/intervene/next_token.py",
    "views/intervene/patchscopes.py",
    "views/intervene/steering.py",
    "views/cause/activation_patching.py",
    "views/cause/input_tokens.py",
    "views/cause/block_writes.py",
}
# every other page shows a model on NDIF as a plain note in its column (ui.page_slots)
HERE = Path(__file__).parent
# The page scripts live in views/, not pages/: a pages/ folder makes Streamlit fall back to its
# old automatic multipage mode for deep links (/attention), which skips this entry script.
navigation = {
    section: [st.Page(file, title=title, icon=icon, default=file == "views/home.py")
              for file, title, icon in pages if (HERE / file).exists()]
    for section, pages in PAGES.items()
}

page = st.navigation(navigation)
keys = ui.model_pickers()
theme.presentation_switch()
FILES = {title: file for pages in PAGES.values() for file, title, _ in pages}
st.session_state["_slots"] = ui.page_slots(ui.load_slots(keys), runs_remote=FILES.get(page.title) in RUNS_REMOTE)
report.sidebar([(file, title) for pages in PAGES.values() for file, title, _ in pages if (HERE / file).exists()],
               page.title)
export.begin_page(page.title, page.url_path)
with stop_when(remote_ui.page_left):  # a job waiting for NDIF ends when the user leaves or changes the page
    page.run()
