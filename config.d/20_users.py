# 20_users.py: who administers the hub.
#
# Usernames are "u" followed by the LMS user id (the `sub` claim): Moodle's user with
# profile URL .../user/profile.php?id=123 is "u123" here.

c = get_config()  # noqa

# Hub admins (may see and stop every user's server). Add one line per admin.
# c.Authenticator.admin_users.add("u123")

# Everyone the LMS launches with a valid, signed id_token may log in. To admit only
# some users, list them and set allow_all to False:
# c.Authenticator.allow_all = False
# c.Authenticator.allowed_users = {"u123", "u456"}
