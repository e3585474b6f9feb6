<?php
// Registers an Ananke hub in this Moodle as an LTI 1.3 tool with the values a site
// admin enters by hand under Site administration > Plugins > Activity modules >
// External tool > Manage tools > "configure a tool manually", then prints the six
// values the hub's 30_lms.py needs. For test-moodle only.
//
//     php register_ananke.php HUB_URL
define('CLI_SCRIPT', true);
require('/opt/moodle/config.php');
require_once($CFG->dirroot . '/mod/lti/locallib.php');

if ($argc !== 2 || !preg_match('~^https?://[^/]+$~', $argv[1])) {
    fwrite(STDERR, "usage: php register_ananke.php HUB_URL (e.g. http://192.168.178.28:8000, no path)\n");
    exit(2);
}
$hub = $argv[1];

$type = new stdClass();
$type->state = LTI_TOOL_STATE_CONFIGURED;
$type->course = SITEID;
$config = new stdClass();
$config->lti_typename = 'Ananke (Jupyter)';
$config->lti_toolurl = $hub . '/hub';
$config->lti_description = 'JupyterLab with nbgrader on the Ananke hub';
$config->lti_ltiversion = LTI_VERSION_1P3;
$config->lti_keytype = LTI_JWK_KEYSET;
$config->lti_publickeyset = $hub . '/services/kore/jwks';
$config->lti_initiatelogin = $hub . '/hub/lti13/oauth_login';
$config->lti_redirectionuris = $hub . '/hub/lti13/oauth_callback';
// Moodle's login name for Ananke's usernames (docs/admin/lms.md).
$config->lti_customparameters = 'username=$User.username';
$config->lti_coursevisible = LTI_COURSEVISIBLE_ACTIVITYCHOOSER;
$config->lti_launchcontainer = LTI_LAUNCH_CONTAINER_WINDOW;
$config->lti_sendname = LTI_SETTING_ALWAYS;
$config->lti_sendemailaddr = LTI_SETTING_ALWAYS;
$config->lti_acceptgrades = LTI_SETTING_DELEGATE;
$config->lti_contentitem = 1;
// The Content Selection URL: the hub recognises a Select content in Moodle's dialog by it
// and runs that login without cookies (docs/admin/lms.md).
$config->lti_toolurl_ContentItemSelectionRequest = $hub . '/hub/?ananke_lti=select-content';
// Grades (AGS: line items and scores) and the roster (NRPS) for Kore.
$config->ltiservice_gradesynchronization = 2;
$config->ltiservice_memberships = 1;
$config->ltiservice_toolsettings = 0;

$typeid = lti_add_type($type, $config);
$tool = lti_get_type($typeid);
$moodle = rtrim($CFG->wwwroot, '/');
echo "# 30_lms.py values for this Moodle (tool id $typeid):\n";
echo "c.LMSRegistration.issuer = '$moodle'\n";
echo "c.LMSRegistration.client_id = '{$tool->clientid}'\n";
echo "c.LMSRegistration.deployment_ids = ['$typeid']\n";
echo "c.LMSRegistration.authorize_url = '$moodle/mod/lti/auth.php'\n";
echo "c.LMSRegistration.jwks_url = '$moodle/mod/lti/certs.php'\n";
echo "c.LMSRegistration.access_token_url = '$moodle/mod/lti/token.php'\n";
