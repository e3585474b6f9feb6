# 30_lms.py: the LMS this hub is registered with (LTI 1.3).
#
# Register the hub as an external tool in the LMS first. For Moodle (Site administration >
# Plugins > Activity modules > External tool > Manage tools > configure a tool manually):
#   Tool URL             https://<hub>/hub
#   LTI version          LTI 1.3
#   Public key type      Keyset URL
#   Public keyset        https://<hub>/services/kore/jwks
#   Initiate login URL   https://<hub>/hub/lti13/oauth_login
#   Redirection URI(s)   https://<hub>/hub/lti13/oauth_callback
#   Custom parameters    username=$User.username
# Moodle then shows "Tool configuration details" (the list icon next to the tool's cog):
# copy its values below. Both the hub and Kore read them from here.

c = get_config()  # noqa

lms = "https://moodle.example.edu"  # your Moodle's site URL, no trailing slash

c.LMSRegistration.issuer = lms  # "Platform ID"
c.LMSRegistration.client_id = "REPLACE-WITH-CLIENT-ID"  # "Client ID": a string or a list
c.LMSRegistration.deployment_ids = []  # "Deployment ID"s allowed to launch; [] allows any
c.LMSRegistration.authorize_url = f"{lms}/mod/lti/auth.php"  # "Authentication request URL"
c.LMSRegistration.jwks_url = f"{lms}/mod/lti/certs.php"  # "Public keyset URL"
c.LMSRegistration.access_token_url = f"{lms}/mod/lti/token.php"  # "Access token URL"

# "https" when a reverse proxy terminates TLS in front of the hub; "auto" (the
# default) reads the X-Forwarded-Proto header that reverse proxy sends.
# c.AnankeLTI13Authenticator.uri_scheme = "https"

# Seconds of clock difference tolerated between the LMS and the hub (an integer). Not 0:
# Moodle's iat is its clock's whole second, so a hub a fraction of a second behind the
# LMS would refuse a launch now and then; keep both clocks synchronised (NTP).
c.LTI13LaunchValidator.time_leeway = 5
# Oldest id_token accepted, in seconds since it was issued (Moodle's live 60 s).
c.LTI13LaunchValidator.max_age = 600
