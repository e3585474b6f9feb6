<?php
// A course to launch Ananke from: "Jupyter 101" with a teacher and two students
// (password Test123.) and one Ananke activity that accepts grades. For test-moodle only.
//
//     php demo_course.php TOOL_ID
define('CLI_SCRIPT', true);
require('/opt/moodle/config.php');
require_once($CFG->dirroot . '/course/lib.php');
require_once($CFG->dirroot . '/course/modlib.php');
require_once($CFG->dirroot . '/user/lib.php');
require_once($CFG->dirroot . '/mod/lti/locallib.php');

if ($argc !== 2 || !ctype_digit($argv[1])) {
    fwrite(STDERR, "usage: php demo_course.php TOOL_ID (the id register_ananke.php printed)\n");
    exit(2);
}
$typeid = (int)$argv[1];
\core\session\manager::set_user(get_admin());

$course = $DB->get_record('course', ['shortname' => 'JUPYTER101']);
if (!$course) {
    $course = create_course((object)[
        'fullname' => 'Jupyter 101', 'shortname' => 'JUPYTER101', 'category' => 1,
        'format' => 'topics', 'numsections' => 1,
    ]);
}
$people = [
    ['teacher1', 'Ada', 'Lovelace', 'editingteacher'],
    ['student1', 'Alan', 'Turing', 'student'],
    ['student2', 'Grace', 'Hopper', 'student'],
];
$manual = enrol_get_plugin('manual');
$instance = $DB->get_record('enrol', ['courseid' => $course->id, 'enrol' => 'manual'], '*', MUST_EXIST);
foreach ($people as [$username, $first, $last, $rolename]) {
    $user = $DB->get_record('user', ['username' => $username]);
    if (!$user) {
        $id = user_create_user((object)[
            'username' => $username, 'password' => 'Test123.', 'firstname' => $first,
            'lastname' => $last, 'email' => "$username@example.invalid",
            'auth' => 'manual', 'confirmed' => 1, 'mnethostid' => $CFG->mnet_localhost_id,
        ]);
        $user = $DB->get_record('user', ['id' => $id]);
    }
    $role = $DB->get_record('role', ['shortname' => $rolename], '*', MUST_EXIST);
    $manual->enrol_user($instance, $user->id, $role->id);
}
if (!$DB->record_exists('lti', ['course' => $course->id, 'typeid' => $typeid])) {
    $module = $DB->get_record('modules', ['name' => 'lti'], '*', MUST_EXIST);
    add_moduleinfo((object)[
        'modulename' => 'lti', 'module' => $module->id, 'course' => $course->id,
        'section' => 1, 'visible' => 1, 'name' => 'Homework in Jupyter',
        'typeid' => $typeid, 'toolurl' => '', 'instructorchoiceacceptgrades' => LTI_SETTING_ALWAYS,
        'instructorchoicesendname' => LTI_SETTING_ALWAYS,
        'instructorchoicesendemailaddr' => LTI_SETTING_ALWAYS,
        'launchcontainer' => LTI_LAUNCH_CONTAINER_WINDOW, 'grade' => 100,
        'cmidnumber' => '', 'introeditor' => ['text' => '', 'format' => FORMAT_HTML, 'itemid' => 0],
    ], $course);
}
$cm = $DB->get_record_sql(
    "SELECT cm.id FROM {course_modules} cm JOIN {modules} m ON m.id = cm.module
      WHERE m.name = 'lti' AND cm.course = ?", [$course->id], IGNORE_MULTIPLE);
echo "course {$course->id}, activity {$CFG->wwwroot}/mod/lti/view.php?id={$cm->id}\n";
