from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("migrations_app", "0013_prediction"),
    ]

    operations = [
        migrations.AddField(
            model_name="migration",
            name="parallel_connections",
            field=models.PositiveSmallIntegerField(
                default=0,
                help_text="Live: connections that carry the memory side by side (QEMU's multifd), 2 to 16; 0 for one.",
            ),
        ),
        migrations.AlterField(
            model_name="migration",
            name="phase",
            field=models.CharField(
                blank=True,
                choices=[
                    ("", "—"),
                    ("waiting", "Waiting for a free slot"),
                    ("checking", "Pre-flight checks"),
                    ("preparing", "Preparing the target"),
                    ("shutting_down", "Shutting down"),
                    ("copying_disk", "Copying disks"),
                    ("verifying", "Verifying the copy"),
                    ("transferring_memory", "Transferring memory"),
                    ("postcopy_interrupted", "Post-copy interrupted"),
                    ("switching_over", "Switching over"),
                    ("defining", "Defining on the target"),
                    ("starting_on_target", "Starting on the target"),
                    ("cleaning_up", "Cleaning up"),
                    ("done", "Done"),
                ],
                default="",
                max_length=24,
            ),
        ),
    ]
