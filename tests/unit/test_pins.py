from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def requirement_lines(text):
    return [l.strip().lstrip("- ").strip() for l in text.splitlines()
            if l.strip() and not l.strip().startswith("#")]


def test_environment_yml_pins_equal_requirements_txt():
    reqs = requirement_lines((ROOT / "requirements.txt").read_text())
    env = (ROOT / "environment.yml").read_text().split("- pip:")[1]
    assert requirement_lines(env) == reqs
