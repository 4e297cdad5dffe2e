"""Pages: the migration form, a migration's live page, the list, the audit log.

Every page renders the whole current state on the server; static/*.js only
keeps it current. Starting and cancelling go through services, like the API.
"""

import csv
import io
import time
from uuid import UUID

import django_rq
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from core.filters import filter_or_400
from core.pagination import paginate
from core.roles import is_operator
from hosts.models import Domain

from . import jobs, services
from .display import event_rows
from .filters import AuditFilter, MigrationFilter
from .forms import MigrationForm
from .models import AuditEntry, Migration, Status, plain_only

# -- the form --------------------------------------------------------------------


def _require_operator(request: HttpRequest) -> None:
    if not is_operator(request.user):
        raise PermissionDenied("Only operators may migrate. Ask an administrator to add you to the 'operators' group.")


@require_http_methods(["GET", "POST"])
def migration_new(request: HttpRequest) -> HttpResponse:
    """The migration form; ``?domain=UUID`` fixes the VM, ``?fragment=1`` renders
    only the form, for the domain page and the dashboard to load in place."""
    _require_operator(request)
    domain = None
    if request.GET.get("domain"):
        try:
            uuid = UUID(request.GET["domain"])
        except ValueError:
            return HttpResponseBadRequest(
                f"{request.GET['domain']!r} is not a virtual machine's UUID.", content_type="text/plain; charset=utf-8"
            )
        domain = get_object_or_404(Domain.objects.select_related("host"), uuid=uuid)
    fragment = request.GET.get("fragment") == "1"
    checks = None
    confirm = False
    if request.method == "POST":
        form = MigrationForm(request.POST, domain=domain)
        if form.is_valid():
            req = form.to_request()
            try:
                if "check" in request.POST:
                    checks = [r.as_dict() for r in services.dry_run(request.user, req)]
                elif request.POST.get("confirmed") == "1":
                    migration = services.request_migration(request.user, req)
                    messages.success(
                        request, f"Migration of {migration.domain_name} to {migration.target_name} requested."
                    )
                    return redirect(migration)
                else:
                    services.validate(req)
                    confirm = True
            except services.MigrationRefused as refused:
                form.add_refusal(refused)
                confirm = False
    else:
        initial = {}
        if request.GET.get("target"):
            initial["target_host"] = request.GET["target"]
        form = MigrationForm(domain=domain, initial=initial)
    context = {
        "form": form,
        "domain": domain,
        "checks": checks,
        "checks_ok": checks is not None and all(c["result"] != "fail" for c in checks),
        "action": request.get_full_path().replace("fragment=1", "").rstrip("?&"),
    }
    if confirm:
        context["summary"] = form.summary(req)
        context["cold"] = form.cleaned_data["mode"] == "cold"
        return render(request, "migrations_app/migration_confirm.html", context)
    template = "migrations_app/_migration_form.html" if fragment else "migrations_app/migration_new.html"
    return render(request, template, context)


# -- one migration ---------------------------------------------------------------


def migration_detail(request: HttpRequest, pk: int) -> HttpResponse:
    migration = get_object_or_404(Migration, pk=pk)
    state = migration.as_event()
    return render(
        request,
        "migrations_app/migration_detail.html",
        {
            "migration": migration,
            "display": state["display"],
            "state": state if is_operator(request.user) else plain_only(state),
            "may_cancel": is_operator(request.user) and migration.is_active,
        },
    )


# Events on one page of a migration's full log.
EVENTS_PER_PAGE = 100


def migration_events(request: HttpRequest, pk: int) -> HttpResponse:
    """Every event of a migration, oldest first, paged: its page shows the newest
    50, and the first steps (flags, the downtime ramp, a throttle) stay here."""
    migration = get_object_or_404(Migration.objects.only("pk", "domain_name", "status", "events"), pk=pk)
    context = paginate(request, event_rows(migration.events or []), EVENTS_PER_PAGE)
    return render(request, "migrations_app/migration_events.html", {"migration": migration, **context})


@require_http_methods(["GET", "POST"])
def migration_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    """The no-JavaScript way to cancel: a confirmation page, then a POST."""
    _require_operator(request)
    migration = get_object_or_404(Migration, pk=pk)
    if request.method == "POST":
        try:
            outcome = services.cancel(request.user, migration)
        except services.MigrationRefused as refused:
            messages.error(request, refused.message)
        else:
            messages.success(
                request,
                "Cancelled before it started."
                if outcome == "cancelled"
                else f"Cancel requested: {migration.domain_name} stays on {migration.source_name}.",
            )
        return redirect(migration)
    return render(request, "migrations_app/migration_cancel.html", {"migration": migration})


def migration_list(request: HttpRequest) -> HttpResponse:
    filters, migrations, code = filter_or_400(MigrationFilter, request, Migration.objects.all())
    values = filters.form.cleaned_data if code == 200 and filters.is_bound else {}
    return render(
        request,
        "migrations_app/migration_list.html",
        {
            "form": filters.form,
            "status": values.get("status") or "",
            "domain": values.get("domain") or "",
            "statuses": Status.choices,
            **paginate(request, migrations, 50),
        },
        status=code,
    )


# -- the audit log -------------------------------------------------------------------


def audit_list(request: HttpRequest) -> HttpResponse:
    filters, entries, code = filter_or_400(AuditFilter, request, AuditEntry.objects.all())
    filters.offer_recorded_outcomes()
    return render(
        request,
        "migrations_app/audit_list.html",
        {"form": filters.form, **paginate(request, entries.select_related("migration"), 50)},
        status=code,
    )


# Characters that make a spreadsheet treat a cell as a formula (OWASP's list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: object) -> str:
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


AUDIT_CSV_COLUMNS = ["at", "user", "action", "outcome", "domain", "source", "target", "migration", "message"]


# One export is at most this many rows, made in at most this many seconds.
# It streamed the whole log before: with 150k rows, four slow downloads held
# the HTTP threads (the dashboard timed out at 30 s) and grew the web process
# by 270 MB. Now it is made in full first (about 1.5 MB at most), so the thread
# is free when the download starts, however slow the client; older entries
# come from the next part (the Link header, and the last row, say which).
AUDIT_EXPORT_MAX_ROWS = 10_000
AUDIT_EXPORT_SECONDS = 10.0


def _export_row(e: AuditEntry) -> list[str]:
    return [
        csv_safe(v)
        for v in (
            e.at.isoformat(),
            e.username or "system",
            e.action,
            e.outcome,
            e.domain_name,
            e.source_name,
            e.target_name,
            e.migration_id or "",
            e.message,
        )
    ]


def audit_export(request: HttpRequest) -> HttpResponse:
    filters, entries, code = filter_or_400(AuditFilter, request, AuditEntry.objects.all())
    problems = [f"{name}: {' '.join(errors)}" for name, errors in filters.errors.items()] if code != 200 else []
    before = request.GET.get("before", "")
    if before:
        last = None
        if before.isdigit() and len(before) <= 18:
            last = AuditEntry.objects.filter(pk=int(before)).only("pk", "at").first()
        if last is None:
            problems.append(f"before: {before[:40]!r} is not the id of an audit entry.")
        else:
            entries = entries.filter(Q(at__lt=last.at) | Q(at=last.at, pk__lt=last.pk))
    if problems:
        return HttpResponseBadRequest(f"Not exported: {'; '.join(problems)}", content_type="text/plain; charset=utf-8")

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(AUDIT_CSV_COLUMNS)
    deadline = time.monotonic() + AUDIT_EXPORT_SECONDS
    written, last_pk, cut = 0, None, False
    for e in entries.iterator(chunk_size=500):
        if written >= AUDIT_EXPORT_MAX_ROWS or (written and time.monotonic() > deadline):
            cut = True
            break
        writer.writerow(_export_row(e))
        written, last_pk = written + 1, e.pk
    headers = {}
    if cut:
        query = request.GET.copy()
        query["before"] = str(last_pk)
        following = f"{request.path}?{query.urlencode()}"
        headers["Link"] = f'<{following}>; rel="next"'
        writer.writerow(
            [""] * (len(AUDIT_CSV_COLUMNS) - 1)
            + [f"Cut after {written} entries: the older ones are in {following} (or narrow the dates)."]
        )
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    part = f"-before-{request.GET['before']}" if before else ""
    headers["Content-Disposition"] = f'attachment; filename="kvmweb-audit-{stamp}{part}.csv"'
    return HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8", headers=headers)


@require_POST
def domain_measure(request: HttpRequest, uuid: UUID) -> HttpResponse:
    """The VM page's "Measure now": its dirty rate by libvirt's page sampling, as a short job."""
    _require_operator(request)
    domain = get_object_or_404(Domain, uuid=uuid)
    if domain.state != "running":
        messages.error(request, f"{domain.name} is {domain.state}: only a running VM dirties memory. Start it first.")
    else:
        django_rq.get_queue("default").enqueue(jobs.measure_domain, domain.pk)
        messages.success(request, f"Measuring how fast {domain.name} dirties its memory (about 7 s): reload then.")
    return redirect(domain)
