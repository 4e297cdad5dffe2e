from django.core.exceptions import ValidationError

from .libvirt import InvalidURI, validate_uri


def validate_libvirt_uri(value):
    try:
        validate_uri(value)
    except InvalidURI as e:
        raise ValidationError(str(e), code="invalid_uri") from None
