from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("hosts", "0009_numeric_maxima"),
    ]

    operations = [
        migrations.AddField(
            model_name="host",
            name="migrate_tls",
            field=models.BooleanField(
                default=True,
                help_text="For a host registered over qemu+tls: send live migrations to and from it over TLS "
                "(VIR_MIGRATE_TLS) when the other host is registered over TLS too. QEMU on both hosts needs the "
                "certificates in /etc/pki/qemu.",
                verbose_name="encrypt migrations (TLS)",
            ),
        ),
    ]
