"""The alert rules of k8s/monitoring/prometheusrule.yaml: promtool checks them, and unit tests
(rules_test.yaml) show the lag and master alerts firing, and not firing, when they should."""
import shutil
import subprocess

from conftest import HERE_RULES_TEST, promtool


def test_promtool_check_rules(rules_file):
    result = subprocess.run([promtool(), "check", "rules", str(rules_file)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_promtool_test_rules_fires_the_lag_and_master_alerts(rules_file):
    test = rules_file.parent / "rules_test.yaml"
    shutil.copy(HERE_RULES_TEST, test)
    result = subprocess.run([promtool(), "test", "rules", str(test)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
