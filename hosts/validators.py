from django.core.exceptions import ValidationError


def validate_libvirt_uri(value):
    from .libvirt_client import InvalidURI, validate_uri

    try:
        validate_uri(value)
    except InvalidURI as e:
        raise ValidationError(str(e), code="invalid_uri") from None
