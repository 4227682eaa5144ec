"""The class kit's documents: minute plans that fit 90 minutes, an answer key that covers every question, slides that
open offline, and a guide whose links resolve."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEACHING = ROOT / "docs" / "teaching"


def _meetings() -> dict[str, list[int]]:
    text = (TEACHING / "meetings.md").read_text()
    plans = {}
    for part in re.split(r"^## ", text, flags=re.M)[1:]:
        title = part.splitlines()[0]
        plans[title] = [int(m) for m in re.findall(r"^\| (\d+) \|", part, flags=re.M)]
    return plans


def test_every_meeting_has_a_minute_plan_of_at_most_90_minutes():
    plans = _meetings()
    assert len(plans) == 6, f"six meetings (five and the optional sixth), found {list(plans)}"
    for title, minutes in plans.items():
        assert len(minutes) >= 3, f"{title}: a plan has at least a lecture, the notebook and a discussion"
        assert sum(minutes) <= 90, f"{title}: {sum(minutes)} minutes in a 90-minute meeting"
    text = (TEACHING / "meetings.md").read_text()
    assert text.count("Running late:") == 6, "every meeting says what to cut when a class runs late"


def test_every_essential_exercise_is_planned_in_class_or_as_homework():
    from saelab.teach.syllabus import syllabus

    text = (TEACHING / "meetings.md").read_text()
    for ex in syllabus(ROOT / "notebooks"):
        if ex.importance == "essential" and not ex.id.startswith("8."):
            assert re.search(rf"\b{re.escape(ex.id)}\b", text), f"essential exercise {ex.id} is in no meeting's plan"


def test_the_answer_key_holds_every_question_and_is_up_to_date():
    from saelab.teach.syllabus import GENERATED_END, GENERATED_START, answer_key_markdown, notebook_sources, questions

    key = (TEACHING / "answer-key.md").read_text()
    generated = key[key.index(GENERATED_START):key.index(GENERATED_END) + len(GENERATED_END)]
    assert generated == answer_key_markdown(ROOT / "notebooks"), \
        "docs/teaching/answer-key.md is stale: run `python -m saelab.teach.syllabus`"
    for path in notebook_sources(ROOT / "notebooks"):
        assert questions(path), f"{path.name}: no question parsed from 'Check your understanding'"
    guide = (ROOT / "docs" / "teaching.md").read_text()
    asked = re.findall(r"^(\d+)\. ", guide.split("Discussion questions", 1)[1].split("\n## ", 1)[0], flags=re.M)
    answered = re.findall(r"^(\d+)\. \*\*", key.split("## The guide's discussion questions", 1)[1].split("## ", 1)[0],
                          flags=re.M)
    assert asked and answered == asked, f"the guide asks {asked}, the key answers {answered}"


def test_slides_open_offline_with_diagrams_and_math(tmp_path):
    from saelab.teach.slides import build_slides

    decks = build_slides(tmp_path / "slides", tmp_path / "no-series")
    assert [p.name for p in decks] == [f"meeting-{i}.html" for i in range(1, 7)]
    for deck in decks:
        page = deck.read_text()
        assert not re.search(r"""(src|href)=["']https?://""", page), f"{deck.name} loads something from the network"
        assert page.count('<section class="slide"') >= 5
    m2 = decks[1].read_text()
    assert "<svg" in m2 and "<math" in m2, "meeting 2 shows the AuxK diagram and the normalized MSE as MathML"
    assert "$" not in re.sub(r"<script.*?</script>", "", m2, flags=re.S), "a formula was left as raw LaTeX"


def test_a_figure_comes_from_the_executed_notebook_or_says_how_to_get_it(tmp_path):
    import nbformat
    import plotly.graph_objects as go

    from saelab.teach.slides import render_deck

    outline = "# Deck\n\n---\n\n## A figure\n\n{{figure: 02_train_topk 1}}\n"
    _, page, n = render_deck(outline, tmp_path)
    assert n == 2 and "run <code>scripts/run_series.py</code>" in page
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("fig")
    cell.outputs = [nbformat.v4.new_output("display_data", data={
        "application/vnd.plotly.v1+json": go.Figure(go.Scatter(x=[1, 2], y=[3, 4], name="<b>x</b>")).to_plotly_json()})]
    nb.cells = [cell]
    nbformat.write(nb, tmp_path / "02_train_topk.ipynb")
    _, page, _ = render_deck(outline, tmp_path)
    assert "Plotly.newPlot" in page and "plotly.js" in page.lower()
    with pytest.raises(ValueError, match="unknown diagram"):
        render_deck("# D\n\n{{diagram: nope}}\n", tmp_path)


def test_the_guides_links_resolve():
    for doc in [ROOT / "docs" / "teaching.md", *TEACHING.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#]+\.md)\)", doc.read_text()):
            if not target.startswith("http"):
                assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


def test_the_readmes_notebook_table_shows_learner_time_and_every_exercise():
    import importlib.util

    spec = importlib.util.spec_from_file_location("notebook_table", ROOT / "scripts" / "notebook_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    readme = (ROOT / "README.md").read_text()
    assert table.updated_readme(readme) == readme, \
        "README.md's notebook table is stale: run `.venv/bin/python scripts/notebook_table.py`"
    assert "learner time" in readme and "compute: full size" in readme


def test_each_meeting_accounts_for_its_notebooks_learner_time():
    """Every notebook's stated learner time is split into reading before class, class time and homework, and the
    parts add up (a plan that gives a notebook less time than it states is caught)."""
    from saelab.teach.syllabus import learner_minutes, notebook_sources

    stated = {p.name[:2]: learner_minutes(p) for p in notebook_sources(ROOT / "notebooks")}
    text = (TEACHING / "meetings.md").read_text()
    found = re.findall(r"(\d\d) \((\d+) learner minutes\) = (\d+) before class \+ (\d+) in class \+ (\d+) homework",
                       text)
    assert sorted(nb for nb, *_ in found) == sorted(stated), "every notebook has one Learner time split"
    for nb, total, before, in_class, home in found:
        assert int(total) == stated[nb], f"notebook {nb} states {stated[nb]} learner minutes, the plan says {total}"
        assert int(before) + int(in_class) + int(home) == int(total), f"notebook {nb}: the parts do not add up"
