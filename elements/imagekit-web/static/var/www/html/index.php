<?php
// Default page of the imagekit web image: proves Nginx hands PHP to PHP-FPM.
header('Content-Type: text/plain');
echo "imagekit web: PHP " . PHP_VERSION . " on " . gethostname() . "\n";
