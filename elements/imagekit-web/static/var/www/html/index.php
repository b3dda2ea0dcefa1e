<?php
// Default page of the imagekit web image: proves Nginx hands PHP to PHP-FPM,
// and that the application reaches its database: each request writes a row
// and reads it back.
header('Content-Type: text/plain');
echo "imagekit web: PHP " . PHP_VERSION . " on " . gethostname() . "\n";
$app = @parse_ini_file('/etc/imagekit/app.ini', true);
if (!$app || !isset($app['database'])) {
    echo "database: not configured\n";
    exit;
}
$db = $app['database'];
echo "database: " . $db['user'] . "@" . $db['host'] . "/" . $db['name'] . "\n";
mysqli_report(MYSQLI_REPORT_OFF);
$link = mysqli_init();
$link->options(MYSQLI_OPT_CONNECT_TIMEOUT, 5);
if (!@$link->real_connect($db['host'], $db['user'], $db['password'], $db['name'])) {
    // Still a page (the web server works); the site test reads this line.
    echo "visit: failed: " . mysqli_connect_error() . "\n";
    exit;
}
$web = gethostname();
$insert = $link->prepare('INSERT INTO visits (web) VALUES (?)');
if (!$insert || !$insert->bind_param('s', $web) || !$insert->execute()) {
    echo "visit: failed: " . $link->error . "\n";
    exit;
}
$id = $link->insert_id;
$row = $link->query("SELECT web, (SELECT COUNT(*) FROM visits) FROM visits WHERE id = $id");
$read = $row ? $row->fetch_row() : null;
if (!$read) {
    echo "visit: failed: " . $link->error . "\n";
    exit;
}
echo "visit: $id written by $read[0] and read back; $read[1] in total\n";
