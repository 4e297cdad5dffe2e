"""Create the two roles: operators (change things) and viewers (read only)."""

from django.db import migrations

OPERATOR_PERMISSIONS = [
    ("hosts", "host", ("add", "change", "view")),
    ("hosts", "domain", ("view",)),
]


def create_groups(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after all migrations ran; make sure
    # they exist now so the groups can be given them.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    operators, _ = Group.objects.get_or_create(name="operators")
    viewers, _ = Group.objects.get_or_create(name="viewers")
    for app_label, model, actions in OPERATOR_PERMISSIONS:
        for action in actions:
            perm = Permission.objects.filter(content_type__app_label=app_label, codename=f"{action}_{model}").first()
            if perm:
                operators.permissions.add(perm)
                if action == "view":
                    viewers.permissions.add(perm)


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=["operators", "viewers"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("hosts", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_groups, remove_groups)]
