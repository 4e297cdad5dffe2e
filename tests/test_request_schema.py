"""One definition of a migration request: the form and the API take the same
limits and apply the same defaults, those of migrations_app.request."""

import pytest

from hosts.models import Domain
from migrations_app import services
from migrations_app.forms import MigrationForm
from migrations_app.models import Migration
from migrations_app.request import BANDWIDTH_MIB, DEFAULTS, FIELD_NAMES, SHUTDOWN_TIMEOUT, MigrationRequest
from migrations_app.serializers import MigrationRequestSerializer

pytestmark = pytest.mark.django_db


@pytest.fixture
def hosts(testdriver_hosts):
    return testdriver_hosts


@pytest.fixture
def domain(hosts):
    return Domain.objects.get(name="kvm01-vm001")


def post_form(client, user, domain, fields):
    client.force_login(user)
    return client.post(f"/migrations/new/?domain={domain.uuid}", {"domain": domain.pk, **fields})


def post_api(api, user, fields):
    api.force_authenticate(user)
    return api.post("/api/migrations/", fields, format="json")


def test_the_form_and_the_api_have_every_field_of_a_request_with_its_default():
    form, serializer = MigrationForm(), MigrationRequestSerializer()
    for name in FIELD_NAMES:
        assert name in form.fields and name in serializer.fields, name
        if name in DEFAULTS and name != "mode":  # the API asks for the mode; the form pre-selects it
            # What the form shows filled in, as it reads it back.
            field = form.fields[name]
            assert field.clean(field.initial) == DEFAULTS[name], name
            assert serializer.fields[name].default == DEFAULTS[name], name
    assert "eject_media" in FIELD_NAMES


@pytest.mark.parametrize(
    "name, value, limit",
    [
        ("shutdown_timeout", SHUTDOWN_TIMEOUT.max + 1, SHUTDOWN_TIMEOUT.max),
        ("shutdown_timeout", SHUTDOWN_TIMEOUT.min - 1, SHUTDOWN_TIMEOUT.min),
        ("bandwidth_mib", BANDWIDTH_MIB.max + 1, BANDWIDTH_MIB.max),
        ("bandwidth_mib", BANDWIDTH_MIB.min - 1, BANDWIDTH_MIB.min),
    ],
)
def test_the_form_and_the_api_refuse_the_same_value_in_the_same_words(
    client, api, operator, hosts, domain, name, value, limit
):
    fields = {"target_host": hosts[1].pk, "mode": "cold", name: value}
    page = post_form(client, operator, domain, {**fields, "confirmed": "1"})
    answer = post_api(api, operator, {"domain": domain.pk, **fields})
    assert page.status_code == 200 and answer.status_code == 400
    said_by_form = page.context["form"].errors[name]
    said_by_api = answer.json()[name]
    assert said_by_form == said_by_api
    assert str(limit) in said_by_form[0]
    assert not Migration.objects.exists()


def test_a_request_made_in_code_meets_the_same_limits(hosts, domain):
    req = MigrationRequest(domain, hosts[1], mode="cold", shutdown_timeout=SHUTDOWN_TIMEOUT.max + 1)
    with pytest.raises(services.MigrationRefused) as refused:
        services.validate(req)
    assert refused.value.field == "shutdown_timeout" and str(SHUTDOWN_TIMEOUT.max) in refused.value.message


def test_what_is_left_out_takes_the_same_default_from_the_form_and_the_api(client, api, operator, hosts, domain):
    # Only what a request cannot do without: everything else left out.
    page = post_form(client, operator, domain, {"target_host": hosts[1].pk, "mode": "cold", "confirmed": "1"})
    assert page.status_code == 302, page.context["form"].errors
    by_form = Migration.objects.get()
    by_form.request_cancel(operator)  # one migration per domain at a time
    answer = post_api(api, operator, {"domain": domain.pk, "target_host": hosts[1].pk, "mode": "cold"})
    assert answer.status_code == 201, answer.content
    by_api = Migration.objects.get(pk=answer.json()["id"])
    for name in FIELD_NAMES - {"mode"}:
        assert getattr(by_form, name) == getattr(by_api, name) == DEFAULTS[name], name


def test_a_migration_row_made_without_a_request_has_the_same_defaults():
    # The model cannot import the request's module (it imports the model), so
    # its column defaults are held to it here.
    for name in FIELD_NAMES - {"mode"}:
        assert Migration._meta.get_field(name).get_default() == DEFAULTS[name], name
