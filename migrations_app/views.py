from django.shortcuts import get_object_or_404, render

from .models import Migration


def migration_detail(request, pk):
    migration = get_object_or_404(Migration, pk=pk)
    return render(request, "migrations_app/migration_detail.html", {"migration": migration})
