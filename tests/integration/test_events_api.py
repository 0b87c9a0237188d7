"""Events as the operator builds them (``kube.events``) are taken by the real API server,
including one stamped at a whole second (a MicroTime without its digits is refused)."""

from __future__ import annotations

import datetime
import uuid

import kubernetes
import pytest

from tests.harness.clusters import Cluster
from vhost_operator.kube.api import connect
from vhost_operator.kube.events import EVENTS_NAMESPACE, Event, Involved, create_event

pytestmark = pytest.mark.cluster


def test_the_api_server_takes_an_event_stamped_at_a_whole_second(cluster: Cluster) -> None:
    name = f"events-{uuid.uuid4().hex[:8]}"
    involved = Involved("vhost-operator.io/v1alpha1", "VirtualHost", name, str(uuid.uuid4()))
    at = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    with connect(kubeconfig=cluster.kubeconfig) as client:
        core = kubernetes.client.CoreV1Api(client)
        create_event(client, Event(involved, "Normal", "StepSucceeded", "bootstrap", at))
        events = core.list_namespaced_event(
            EVENTS_NAMESPACE, field_selector=f"involvedObject.name={name}"
        )
        assert [(event.reason, event.message) for event in events.items] == [
            ("StepSucceeded", "bootstrap")
        ]
        assert events.items[0].event_time == at
        for event in events.items:
            assert event.metadata.name is not None
            core.delete_namespaced_event(event.metadata.name, EVENTS_NAMESPACE)
