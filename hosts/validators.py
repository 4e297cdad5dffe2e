from django.core.exceptions import ValidationError

from .libvirt import InvalidURI, check_hypervisor_network, validate_uri


def validate_libvirt_uri(value: str) -> None:
    try:
        check_hypervisor_network(validate_uri(value))
    except InvalidURI as e:
        raise ValidationError(str(e), code="invalid_uri") from None
