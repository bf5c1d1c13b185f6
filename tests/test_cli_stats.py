"""`bidrn stats` as a user runs it: the installed console command, its table and its JSON."""
import json
import subprocess
import sys


def _bidrn(*args):
    return subprocess.run([sys.executable, "-m", "bidrn", *args], capture_output=True, text=True, timeout=300)


def test_stats_json_lists_name_params_and_ops():
    res = _bidrn("stats", "hand4whole", "bidrn", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [r["name"] for r in rows] == ["hand4whole", "bidrn"]
    # Paper, Table 1: 77.84 M / 16.85 G and 17.22 M / 2.50 G (the latter with deconv3 counted binary).
    assert abs(rows[0]["params_m"] - 77.84) < 0.02 and abs(rows[0]["ops_g"] - 16.85) < 0.03
    assert abs(rows[1]["params_m"] - 17.22) < 0.02 and abs(rows[1]["ops_g_deconv3_binary"] - 2.50) < 0.03
    assert set(rows[1]["parts"]) == {"body encoder", "hand encoder", "face encoder", "BoxNet", "other heads"}


def test_stats_table_shows_paper_figures_and_parts():
    res = _bidrn("stats", "bidrn")
    assert res.returncode == 0, res.stderr
    assert "17.22" in res.stdout and "Table 1" in res.stdout
    assert "1-bit params" in res.stdout and "SMPL-X layer" in res.stdout


def test_unknown_model_is_a_clear_error_not_a_traceback():
    res = _bidrn("stats", "resnet-9000")
    assert res.returncode == 2
    assert "unknown model 'resnet-9000'" in res.stderr and "Traceback" not in res.stderr
