{#- Ananke (lab/formgrader.py): nbgrader's page, whose folder links go to /tree/<path>
at the host's root when the formgrader is a page of its own. They open the folder in
this server's JupyterLab instead; inside JupyterLab's frame nbgrader's own links stay. -#}
{%- extends 'nbgrader/manage_assignments.tpl' -%}

{%- block head -%}
{{ super() }}
<script>
(function () {
  var nbgraderLinkTo = linkTo;
  linkTo = function (type, path) {
    if (window !== window.top) {
      return nbgraderLinkTo(type, path);
    }
    var url = base_url + "/lab/tree/" + path.split("/").map(encodeURIComponent).join("/");
    return function (_, el) {
      return $(el).attr("href", url).attr("target", "_blank")[0];
    };
  };
})();
</script>
{%- endblock -%}
