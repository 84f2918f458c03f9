"""M3terRetryPolicy where Airflow has no retry policies (before 3.3): importable, inert."""

from __future__ import annotations

import subprocess
import sys


def test_importable_but_inert_without_airflows_retry_policy() -> None:
    # Airflow before 3.3 has no airflow.sdk.definitions.retry_policy; hide it to act like one.
    script = (
        "import sys\n"
        "sys.modules['airflow.sdk.definitions.retry_policy'] = None\n"
        "from airflow_provider_m3ter.client.errors import M3terFinalError\n"
        "from airflow_provider_m3ter.retry_policy import RETRY_POLICY_SUPPORTED, M3terRetryPolicy\n"
        "policy = M3terRetryPolicy()\n"
        "decision = policy.evaluate(M3terFinalError(400, 'GET', '/x', 'bad'), 1, 3)\n"
        "print(RETRY_POLICY_SUPPORTED, decision, policy.delay_for(2).total_seconds())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["False", "None", "60.0"]
