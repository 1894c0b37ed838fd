"""The twin fed through a real mosquitto broker: one services.edge agent per district uploads each window."""

from __future__ import annotations

from twinmpc.services.twin.decision_log import DecisionLog, verify_decisions
from twinmpc.services.twin.loop import TwinConfig, TwinLoop


def test_loop_through_mqtt_and_district_edge_agents(loop_thread, cluster2, mosquitto_broker, tmp_path) -> None:
    config = TwinConfig(intersections=16, districts=2, windows=2, window_seconds=2, period_seconds=60, epsilons=(4.0,),
                        mqtt=f"{mosquitto_broker.host}:{mosquitto_broker.port}")
    decisions = DecisionLog.open(tmp_path / "twin")
    loop = TwinLoop(config, cluster2, tmp_path, decisions)

    async def go():
        await loop.start()
        try:
            await loop.run()
        finally:
            await loop.close()

    loop_thread.run(go())
    decisions.close()
    ours = loop.private[0]
    assert loop.last_error == "" and ours.collections == 2 * 2, loop.last_error  # 2 windows x 2 district tasks
    assert all(t.measurement.bits == config.report_bits > config.bits for t in ours.tasks)  # a gateway reports a district's sum
    assert verify_decisions(decisions.path, decisions.public_key).plans == 4
