"""A real OpenID provider for the tests: django-oauth-toolkit with OIDC enabled, run as a script.

``python provider.py CONFIG_JSON`` migrates a fresh SQLite database, creates the users, groups and
applications the config names, and serves the provider (Django's threaded WSGI server) on
``127.0.0.1:<port>``, issuer ``http://127.0.0.1:<port>/o``. ID tokens are RS256 and carry
``preferred_username`` and ``groups`` (the user's Django groups) with the ``profile`` scope.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, ClassVar

import django
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings

CFG: dict[str, Any] = json.loads(sys.argv[1]) if __name__ == "__main__" else {}


def configure() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    settings.configure(
        DEBUG=False, SECRET_KEY="op-test-secret-key-not-for-production", ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF="__main__", USE_TZ=True, LOGIN_URL="/accounts/login/",
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions",
                        "oauth2_provider"],
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware",
                    "django.middleware.csrf.CsrfViewMiddleware",
                    "django.contrib.auth.middleware.AuthenticationMiddleware"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": CFG["db"]}},
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates",
                    "DIRS": [str(Path(__file__).parent / "templates")], "APP_DIRS": True,
                    "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                                       "django.contrib.auth.context_processors.auth"]}}],
        OAUTH2_PROVIDER={"OIDC_ENABLED": True, "OIDC_RSA_PRIVATE_KEY": pem, "PKCE_REQUIRED": True,
                         "OIDC_ISS_ENDPOINT": f"http://127.0.0.1:{CFG['port']}/o",
                         "SCOPES": {"openid": "OpenID Connect", "profile": "Profile", "email": "Email"},
                         "OAUTH2_VALIDATOR_CLASS": "__main__.Validator"},
    )
    django.setup()


if __name__ == "__main__":
    configure()
    from django.contrib.auth import views as auth_views
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.core.servers.basehttp import run
    from django.core.wsgi import get_wsgi_application
    from django.urls import include, path
    from oauth2_provider.models import Application
    from oauth2_provider.oauth2_validators import OAuth2Validator

    class Validator(OAuth2Validator):  # type: ignore[misc]
        oidc_claim_scope: ClassVar[dict[str, str]] = {**OAuth2Validator.oidc_claim_scope, "groups": "profile",
                                                      "preferred_username": "profile"}

        def get_additional_claims(self, request: Any) -> dict[str, Any]:
            return {"preferred_username": request.user.username,
                    "groups": sorted(g.name for g in request.user.groups.all())}

    sys.modules["__main__"].Validator = Validator  # type: ignore[attr-defined]
    urlpatterns = [path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
                   path("accounts/login/", auth_views.LoginView.as_view())]
    sys.modules["__main__"].urlpatterns = urlpatterns  # type: ignore[attr-defined]
    call_command("migrate", verbosity=0)
    for u in CFG["users"]:
        user = User.objects.create_user(u["username"], password=u["password"])
        for g in u.get("groups", []):
            user.groups.add(Group.objects.get_or_create(name=g)[0])
    for a in CFG["apps"]:
        Application.objects.create(
            name=a["client_id"], client_id=a["client_id"], client_secret=a["client_secret"],
            client_type=Application.CLIENT_CONFIDENTIAL, authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
            redirect_uris=" ".join(a["redirect_uris"]), algorithm=Application.RS256_ALGORITHM,
            skip_authorization=True)
    print("ready", flush=True)
    run("127.0.0.1", int(CFG["port"]), get_wsgi_application(), threading=True)
