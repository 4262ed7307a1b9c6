"""The local alarm evaluator: M out of N, transitions only, CloudWatch-like reasons and SNS events."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from s3sync import contract
from s3sync.local import alarms
from s3sync.local.alarms import ALARM, INSUFFICIENT_DATA, OK, Alarm, to_sns_event

T0 = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def test_single_datapoint_alarm_reason_matches_the_sample(sample_event):
    alarm = Alarm("my-queue-backlog-alarm", contract.DEFAULT_SCALE_OUT_THRESHOLD, "GreaterThanOrEqualToThreshold", 1)
    assert alarm.state == INSUFFICIENT_DATA
    t = alarm.observe(150, at(0))
    assert t is not None and (t.old_state, t.new_state) == (INSUFFICIENT_DATA, ALARM)
    assert t.reason == sample_event("sns-cloudwatch-alarm-message")["NewStateReason"]
    assert alarm.observe(500, at(1)) is None  # still ALARM: actions fire on transitions only
    back = alarm.observe(3, at(2))
    assert back is not None and (back.old_state, back.new_state) == (ALARM, OK)
    assert back.reason == ("Threshold Crossed: 1 out of the last 1 datapoints [3.0 (01/05/24 12:02:00)] was not "
                           "greater than or equal to the threshold (100.0) (minimum 1 datapoint for ALARM -> OK "
                           "transition).")
    assert alarm.observe(2, at(3)) is None


def test_m_out_of_n():
    alarm = Alarm("a", 0, "LessThanOrEqualToThreshold", evaluation_periods=3, datapoints_to_alarm=2)
    assert alarm.observe(5, at(0)) is None  # 1 fine of the 2 needed for OK: not enough data yet
    t = alarm.observe(4, at(1))
    assert t is not None and t.new_state == OK
    assert alarm.observe(0, at(2)) is None  # 1 breaching of 3: below M=2
    t = alarm.observe(0, at(3))  # window [0, 0, 4]: 2 breaching
    assert t is not None and (t.old_state, t.new_state) == (OK, ALARM)
    assert t.reason == ("Threshold Crossed: 2 out of the last 3 datapoints [0.0 (01/05/24 12:03:00), 0.0 "
                        "(01/05/24 12:02:00)] were less than or equal to the threshold (0.0) (minimum 2 datapoints "
                        "for OK -> ALARM transition).")
    assert [p.value for p in t.datapoints] == [0.0, 0.0, 4.0]
    assert alarm.observe(7, at(4)) is None  # [7, 0, 0]: still 2 breaching
    t = alarm.observe(7, at(5))  # [7, 7, 0]: 2 fine >= N-M+1
    assert t is not None and t.new_state == OK
    assert "2 out of the last 3 datapoints" in t.reason and "were not less than or equal to" in t.reason


@pytest.mark.parametrize(
    ("comparison", "value", "breach"),
    [("GreaterThanThreshold", 10, False), ("GreaterThanThreshold", 11, True), ("LessThanThreshold", 10, False),
     ("LessThanThreshold", 9, True), ("GreaterThanOrEqualToThreshold", 10, True),
     ("LessThanOrEqualToThreshold", 10, True)],
)
def test_comparisons(comparison, value, breach):
    assert Alarm("a", 10, comparison).breaches(value) is breach


def test_invalid_configuration():
    with pytest.raises(ValueError):
        Alarm("a", 1, "NotAnOperator")
    with pytest.raises(ValueError):
        Alarm("a", 1, "GreaterThanThreshold", evaluation_periods=2, datapoints_to_alarm=3)


def scale_out_api_alarm() -> dict[str, Any]:
    return {
        "AlarmName": "s3sync-backlog-high", "AlarmDescription": "queue backlog", "Namespace": "AWS/SQS",
        "MetricName": "ApproximateNumberOfMessagesVisible", "Statistic": "Average", "Period": 60,
        "EvaluationPeriods": 1, "Threshold": 100.0, "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "Dimensions": [{"Name": "QueueName", "Value": "s3sync-parts"}], "TreatMissingData": "missing",
    }


def test_sns_event_from_a_metric_alarm_description(sample_event):
    api = scale_out_api_alarm()
    alarm = Alarm.from_metric_alarm(api)
    t = alarm.observe(250, at(0))
    assert t is not None
    event = to_sns_event(t, topic_arn="arn:aws:sns:us-east-1:123456789012:scale", region="us-east-1",
                         metric_alarm=api)
    msg = json.loads(event["Records"][0]["Sns"]["Message"])
    sample_msg = sample_event("sns-cloudwatch-alarm-message")
    assert set(msg) == set(sample_msg) and set(msg["Trigger"]) == set(sample_msg["Trigger"])
    assert msg["Trigger"]["Statistic"] == "AVERAGE"
    assert msg["Trigger"]["Dimensions"] == [{"value": "s3sync-parts", "name": "QueueName"}]
    assert (msg["NewStateValue"], msg["OldStateValue"]) == ("ALARM", "INSUFFICIENT_DATA")
    assert msg["AlarmDescription"] == "queue backlog"
    assert msg["StateChangeTime"] == "2024-05-01T12:00:00.000+0000"
    assert msg["NewStateReason"] == t.reason


def test_sns_event_for_metric_math_scale_in():
    metrics = [
        {"Id": "backlog", "Expression": "visible + inflight", "ReturnData": True},
        {"Id": "visible", "ReturnData": False, "MetricStat": {"Metric": {"Namespace": "AWS/SQS",
         "MetricName": "ApproximateNumberOfMessagesVisible", "Dimensions": [{"Name": "QueueName", "Value": "q"}]},
         "Period": 60, "Stat": "Maximum"}},
        {"Id": "inflight", "ReturnData": False, "MetricStat": {"Metric": {"Namespace": "AWS/SQS",
         "MetricName": "ApproximateNumberOfMessagesNotVisible", "Dimensions": [{"Name": "QueueName", "Value": "q"}]},
         "Period": 60, "Stat": "Maximum"}},
    ]
    alarm = Alarm("s3sync-idle", 0, "LessThanOrEqualToThreshold", evaluation_periods=3)
    transitions = [alarm.observe(v, at(i)) for i, v in enumerate([4, 0, 0, 0])]
    assert [t.new_state if t else None for t in transitions] == [OK, None, None, ALARM]
    t = transitions[-1]
    event = to_sns_event(t, topic_arn="arn:aws-cn:sns:cn-north-1:123456789012:scale", region="cn-north-1",
                         metrics=metrics)
    msg = json.loads(event["Records"][0]["Sns"]["Message"])
    assert "MetricName" not in msg["Trigger"] and [m["Id"] for m in msg["Trigger"]["Metrics"]] == [
        "backlog", "visible", "inflight"]
    assert msg["Trigger"]["EvaluationPeriods"] == 3 and msg["Trigger"]["ComparisonOperator"] == (
        "LessThanOrEqualToThreshold")
    assert msg["Region"] == "China (Beijing)"
    via_api = alarms.trigger_from_metric_alarm({"Metrics": metrics, "EvaluationPeriods": 3, "Threshold": 0,
                                                "ComparisonOperator": "LessThanOrEqualToThreshold"})
    assert via_api["Metrics"] == msg["Trigger"]["Metrics"] and via_api["Period"] == 60


def test_to_sns_event_needs_a_metric():
    t = Alarm("a", 1, "GreaterThanThreshold").observe(2)
    assert t is not None
    with pytest.raises(ValueError):
        to_sns_event(t, topic_arn="arn:t", region="us-east-1")
    event = to_sns_event(t, topic_arn="arn:t", region="us-east-1", metric_name="M", namespace="N",
                         dimensions={"QueueName": "q"})
    assert json.loads(event["Records"][0]["Sns"]["Message"])["Trigger"]["MetricName"] == "M"
